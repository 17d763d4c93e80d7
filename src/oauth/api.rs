//! The admin HTTP API (ejabberd's `mod_http_api` style): `POST
//! /api/<command>` runs the `petrel ctl` command of that name (kebab-case
//! aliases too) with a JSON body — an array of the arguments in order, or an
//! object naming them as `petrel ctl help` does, in lower case (`{"user":
//! "bob", "host": "localhost", "password": "…"}`). Authorized by a bearer
//! token with scope `petrel:admin` (issued by `petrel ctl oauth_issue_token`
//! only); off unless `http_api = true`. Answers: 200 `{"output": …}`; 400
//! `{"error": "refused" | "invalid_request", "message": …}`; 401 without a
//! valid token, 403 without the scope (RFC 6750 errors); 404 for an unknown
//! command. Every command leaves the same audit line as from `ctl`.

use std::sync::Arc;

use bytes::Bytes;
use warp::http::{header, Response, StatusCode};

use crate::auth::scopes::ADMIN;
use crate::auth::TokenError;
use crate::ctl::{self, CtlContext};

/// Largest request body.
const MAX_BODY: u64 = 64 * 1024;

fn json(status: StatusCode, body: serde_json::Value) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Bytes::from(body.to_string()))
        .expect("a valid response")
}

fn bearer_error(status: StatusCode, error: &str, description: &str) -> Response<Bytes> {
    let mut r = json(
        status,
        serde_json::json!({ "error": error, "error_description": description }),
    );
    let challenge = format!("Bearer error=\"{error}\", scope=\"{ADMIN}\"");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        challenge.parse().expect("a valid header"),
    );
    r
}

/// The arguments in order, from an array or from an object keyed by the
/// command's argument names (lower case).
fn arguments(cmd: &ctl::Command, body: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Array(Vec::new())
    } else {
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?
    };
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(format!("arguments are strings or numbers, not {other}")),
    };
    match v {
        serde_json::Value::Array(items) => items.iter().map(text).collect(),
        serde_json::Value::Object(map) => {
            let mut out = Vec::new();
            for name in cmd.args {
                let key = name.trim_matches(['[', ']']).to_ascii_lowercase();
                match map.get(&key) {
                    Some(v) => out.push(text(v)?),
                    None if name.starts_with('[') => {}
                    None => return Err(format!("missing argument \"{key}\"")),
                }
            }
            if let Some(extra) = map.keys().find(|k| {
                !cmd.args
                    .iter()
                    .any(|a| a.trim_matches(['[', ']']).eq_ignore_ascii_case(k))
            }) {
                return Err(format!("unknown argument \"{extra}\""));
            }
            Ok(out)
        }
        _ => Err("the body is an array of arguments or an object of named ones".into()),
    }
}

/// Answers one API call.
async fn call(
    ctx: Arc<CtlContext>,
    command: String,
    authorization: Option<String>,
    body: Bytes,
) -> Response<Bytes> {
    let token = authorization
        .as_deref()
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(token) = token else {
        return bearer_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "a bearer token is required",
        );
    };
    match ctx.auth.check_token(token, None, ADMIN) {
        Ok(_) => {}
        Err(TokenError::MissingScope(_)) => {
            return bearer_error(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "the token lacks petrel:admin",
            )
        }
        Err(e) => return bearer_error(StatusCode::UNAUTHORIZED, "invalid_token", &e.to_string()),
    }
    let Some(cmd) = ctl::command(&command) else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "unknown_command", "message": format!("no command {command}") }),
        );
    };
    let args = match arguments(cmd, &body) {
        Ok(a) => a,
        Err(m) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": "invalid_request", "message": m }),
            )
        }
    };
    let mut full = vec![command];
    full.extend(args);
    let done = tokio::task::spawn_blocking(move || ctl::execute(&ctx, &full)).await;
    match done {
        Ok(Ok(Ok(output))) => json(StatusCode::OK, serde_json::json!({ "output": output })),
        Ok(Ok(Err(message))) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "refused", "message": message }),
        ),
        Ok(Err(usage)) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({ "error": "invalid_request", "message": usage.0 }),
        ),
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": "server_error" }),
        ),
    }
}

/// `POST /api/<command>`; with no context (`http_api` off) it matches
/// nothing, and the path is an unknown one like any other.
pub fn route(
    ctx: Option<Arc<CtlContext>>,
) -> impl warp::Filter<Extract = (Response<Bytes>,), Error = warp::Rejection> + Clone {
    use warp::Filter;
    let on = warp::any().and_then(move || {
        let ctx = ctx.clone();
        async move { ctx.ok_or_else(warp::reject::not_found) }
    });
    on.and(warp::post())
        .and(warp::path!("api" / String))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .then(
            |ctx: Arc<CtlContext>, command: String, authz: Option<String>, body: Bytes| {
                call(ctx, command, authz, body)
            },
        )
}
