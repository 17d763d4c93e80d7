//! What the sign-in pages share: HTML with safe headers, redirects, the
//! anti-CSRF value (signed with the server key, bound to what the form is
//! about and to a cookie: double submit, valid for ten minutes) and the
//! password check behind a sign-in.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use warp::http::{header, Response, StatusCode};

use super::OauthState;
use crate::auth::{now, random_bytes, AuthError, BareJid};

const CSRF_COOKIE: &str = "petrel_csrf";
pub const CSRF_LIFETIME: u64 = 600;

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// An HTML page with the headers every page here carries (no caching, no
/// framing, no scripts). `form_target`: the origin a form on it may end up
/// at besides this server (the redirect URI a sign-in sends the browser
/// to: browsers apply `form-action` to the redirect after a POST too).
pub fn page(
    status: StatusCode,
    title: &str,
    body: &str,
    cookie: Option<String>,
    form_target: Option<&str>,
) -> Response<Bytes> {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem;color:#222}}\
label{{display:block;margin:.8rem 0 .2rem}}input[type=text],input[type=password]{{width:100%;padding:.5rem;box-sizing:border-box}}\
button{{margin-top:1.2rem;padding:.5rem 1.2rem}}.error{{color:#a00}}.scope{{font-family:monospace}}</style></head>\
<body><h1>{t}</h1>{body}</body></html>\n",
        t = escape(title)
    );
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header("x-frame-options", "DENY")
        .header(
            "content-security-policy",
            format!(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'{}; frame-ancestors 'none'",
                form_target.map(|o| format!(" {o}")).unwrap_or_default()
            ),
        )
        .header("referrer-policy", "no-referrer");
    if let Some(c) = cookie {
        b = b.header(header::SET_COOKIE, c);
    }
    b.body(Bytes::from(html)).expect("static headers")
}

/// An error page that redirects nowhere.
pub fn error_page(status: StatusCode, message: &str) -> Response<Bytes> {
    page(
        status,
        "Sign-in error",
        &format!("<p class=\"error\">{}</p>", escape(message)),
        None,
        None,
    )
}

pub fn redirect(location: String) -> Response<Bytes> {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Bytes::new())
        .expect("URL-encoded location is a valid header")
}

fn csrf_mac(key: &[u8; 32], nonce: &[u8], ts: u64, binding: &[&str]) -> [u8; 16] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(b"petrel-csrf\0");
    m.update(nonce);
    m.update(&ts.to_be_bytes());
    for b in binding {
        m.update(&(b.len() as u64).to_be_bytes());
        m.update(b.as_bytes());
    }
    m.finalize().into_bytes()[..16]
        .try_into()
        .expect("16 of 32 bytes")
}

/// A fresh anti-CSRF form value, bound to `binding` (what the form is
/// about), and the cookie that goes with it.
pub fn new_csrf(state: &OauthState, binding: &[&str], secure: bool) -> (String, String) {
    let nonce = random_bytes::<16>();
    let ts = now();
    let mut raw = nonce.to_vec();
    raw.extend_from_slice(&ts.to_be_bytes());
    raw.extend_from_slice(&csrf_mac(state.auth.server_key(), &nonce, ts, binding));
    let cookie = format!(
        "{CSRF_COOKIE}={}; Path=/oauth; HttpOnly; SameSite=Strict; Max-Age={CSRF_LIFETIME}{}",
        URL_SAFE_NO_PAD.encode(nonce),
        if secure { "; Secure" } else { "" }
    );
    (URL_SAFE_NO_PAD.encode(raw), cookie)
}

/// Whether a form stamped at `ts` may still be posted at `now`: at most
/// `CSRF_LIFETIME` old, at most 5 s ahead (clock steps); any `ts` a
/// client makes up is answered without overflow.
pub(crate) fn csrf_fresh(ts: u64, now: u64) -> bool {
    ts <= now.saturating_add(5) && now.saturating_sub(ts) <= CSRF_LIFETIME
}

/// Whether a posted anti-CSRF value is fresh, ours, bound to `binding`
/// and matches the cookie.
pub fn csrf_ok(
    state: &OauthState,
    value: &str,
    cookie_header: Option<&str>,
    binding: &[&str],
) -> bool {
    let Ok(raw) = URL_SAFE_NO_PAD.decode(value) else {
        return false;
    };
    if raw.len() != 40 {
        return false;
    }
    let (nonce, rest) = raw.split_at(16);
    let ts = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
    if !csrf_fresh(ts, now()) {
        return false;
    }
    let mac_ok: bool = csrf_mac(state.auth.server_key(), nonce, ts, binding)
        .ct_eq(&rest[8..])
        .into();
    let cookie_nonce = cookie_header.and_then(|h| {
        h.split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == CSRF_COOKIE)
            .and_then(|(_, v)| URL_SAFE_NO_PAD.decode(v).ok())
    });
    let cookie_ok = cookie_nonce.is_some_and(|c| bool::from(c.as_slice().ct_eq(nonce)));
    mac_ok && cookie_ok
}

/// Why a sign-in did not give an account.
pub enum SignInFailure {
    /// Wrong account or password: show the form again.
    Wrong,
    /// A page to show instead (throttled, internal error).
    Page(Box<Response<Bytes>>),
}

/// Checks a sign-in form's account and password (throttled, from `peer`).
pub fn sign_in(
    state: &OauthState,
    peer: Option<std::net::IpAddr>,
    username: &str,
    password: &str,
) -> Result<BareJid, SignInFailure> {
    let Ok(jid) = BareJid::from_user(username, &state.default_host) else {
        return Err(SignInFailure::Wrong);
    };
    match state.auth.check_password_from(peer, &jid, password) {
        Ok(()) => Ok(jid),
        Err(AuthError::BadPassword) => Err(SignInFailure::Wrong),
        Err(AuthError::Throttled(wait)) => Err(SignInFailure::Page(Box::new(throttled_page(wait)))),
        Err(e) => {
            tracing::error!(error = %e, "sign-in");
            Err(SignInFailure::Page(Box::new(error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error.",
            ))))
        }
    }
}

/// 429 with `Retry-After`: too many failures from this address or account.
pub fn throttled_page(wait: std::time::Duration) -> Response<Bytes> {
    let mut page = error_page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many failed attempts. Wait a moment, then go back and try again.",
    );
    if let Ok(v) = wait.as_secs().max(1).to_string().parse() {
        page.headers_mut().insert(header::RETRY_AFTER, v);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_stamps_from_the_future_or_the_past_are_refused_without_overflow() {
        let t = 1_800_000_000;
        assert!(csrf_fresh(t, t));
        assert!(csrf_fresh(t + 3, t), "a little clock skew");
        assert!(!csrf_fresh(t + 6, t));
        assert!(csrf_fresh(t - CSRF_LIFETIME, t));
        assert!(!csrf_fresh(t - CSRF_LIFETIME - 1, t));
        assert!(!csrf_fresh(u64::MAX, t));
        assert!(!csrf_fresh(0, t));
        assert!(csrf_fresh(u64::MAX, u64::MAX));
        assert!(!csrf_fresh(u64::MAX, 0));
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    /// A value bound to one thing does not pass for another.
    #[test]
    fn csrf_mac_binds_its_fields() {
        let k = [7; 32];
        let a = csrf_mac(&k, b"n", 1, &["ab", "c"]);
        assert_ne!(a, csrf_mac(&k, b"n", 1, &["a", "bc"]));
        assert_ne!(a, csrf_mac(&k, b"n", 2, &["ab", "c"]));
        assert_eq!(a, csrf_mac(&k, b"n", 1, &["ab", "c"]));
    }
}
