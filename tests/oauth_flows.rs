//! The OAuth grants for real apps, end to end against the running server,
//! driven by an independent client library (Python `authlib`): the
//! authorization code grant with PKCE, refresh with rotation and replay
//! detection, revocation; and the tokens they give logging in over XMPP
//! and MQTT.

mod common;

use std::time::Duration;

use common::mqtt_raw::{connect_packet, RawClient};
use common::python::run_script;
use common::xmpp::Raw;
use common::{client, post_form, Petrel};
use petrel::mqtt::codec::{Packet, Version};

const CB: &str = "http://127.0.0.1:9/cb";

/// authlib's OAuth2Session through the code flow: the authorization URL
/// with an S256 challenge, the sign-in page read and posted as a browser
/// would (its hidden fields and cookie), the redirect's code exchanged
/// with the verifier; then a refresh, a replay of the spent refresh token,
/// and a revocation. Prints what happened as JSON.
const AUTHLIB_CODE_FLOW: &str = r#"
import sys, json, re, html
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.common.security import generate_token
base, client_id, secret, cb, user, password, scope, replay = sys.argv[1:9]
secret = None if secret == "-" else secret
out = {}
s = OAuth2Session(client_id, secret, redirect_uri=cb, scope=scope,
                  code_challenge_method="S256",
                  token_endpoint_auth_method="client_secret_basic" if secret else "none")
verifier = generate_token(64)
url, state = s.create_authorization_url(base + "/oauth/authorize", code_verifier=verifier)
browser = requests.Session()
page = browser.get(url, allow_redirects=False)
out["page_status"] = page.status_code
out["page_names_client"] = "Flow Test App" in page.text
out["page_shows_scope"] = scope in page.text
fields = {html.unescape(n): html.unescape(v) for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)}
action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
def post(decision, pw):
    f = dict(fields, username=user, password=pw, decision=decision)
    return browser.post(base + action, data=f, allow_redirects=False)
# Deny needs no password: back to the app with access_denied.
denied = post("deny", "")
out["deny"] = [denied.status_code, "error=access_denied" in denied.headers.get("location", "")]
bad = post("allow", "wrong")
out["wrong_password_status"] = bad.status_code
# A wrong password shows the form again, with a fresh anti-CSRF value.
fields = {html.unescape(n): html.unescape(v) for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', bad.text)}
r = post("allow", password)
out["redirect_status"] = r.status_code
if r.status_code != 302:
    print(json.dumps(dict(out, body=r.text))); sys.exit(0)
loc = r.headers["location"]
out["location_has_iss"] = "iss=" in loc
out["state_kept"] = ("state=" + state) in loc
tok = s.fetch_token(base + "/oauth/token", authorization_response=loc, code_verifier=verifier)
out["first"] = {k: tok.get(k) for k in ("access_token", "refresh_token", "expires_in", "scope", "token_type")}
if replay != "1":
    print(json.dumps(out)); sys.exit(0)
# The same code again: refused, and the tokens it gave are revoked.
code = re.search(r"code=([^&]+)", loc).group(1)
again = requests.post(base + "/oauth/token", data={"grant_type": "authorization_code", "code": code,
    "redirect_uri": cb, "code_verifier": verifier, "client_id": client_id},
    auth=(client_id, secret) if secret else None)
out["code_replay"] = [again.status_code, again.json().get("error")]
print(json.dumps(out))
"#;

/// Refresh with rotation through authlib, then the spent token replayed.
const AUTHLIB_REFRESH: &str = r#"
import sys, json
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client.errors import OAuthError
base, client_id, secret, refresh = sys.argv[1:5]
secret = None if secret == "-" else secret
out = {}
s = OAuth2Session(client_id, secret,
                  token_endpoint_auth_method="client_secret_basic" if secret else "none")
new = s.refresh_token(base + "/oauth/token", refresh_token=refresh)
out["second"] = {k: new.get(k) for k in ("access_token", "refresh_token", "expires_in", "scope")}
try:
    s.refresh_token(base + "/oauth/token", refresh_token=refresh)
    out["replay"] = "accepted"
except OAuthError as e:
    out["replay"] = e.error
try:
    s.refresh_token(base + "/oauth/token", refresh_token=new["refresh_token"])
    out["after_replay"] = "accepted"
except OAuthError as e:
    out["after_replay"] = e.error
print(json.dumps(out))
"#;

/// RFC 7662 through authlib: a resource server (the confidential client)
/// asks about tokens.
const AUTHLIB_INTROSPECT: &str = r#"
import sys, json
from authlib.integrations.requests_client import OAuth2Session
base, client_id, secret = sys.argv[1:4]
s = OAuth2Session(client_id, secret)
out = []
for t in sys.argv[4:]:
    r = s.introspect_token(base + "/oauth/introspect", token=t)
    out.append([r.status_code, r.json()])
print(json.dumps(out))
"#;

fn run(script: &str, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = run_script(script, args, Duration::from_secs(60));
    assert!(ok, "authlib script failed: {err}\n{out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("bad output {out} / {err}"))
}

fn mqtt_login(p: &Petrel, token: &str) -> u8 {
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    c.send(&connect_packet(
        "flow-test",
        Some("X-OAUTH2"),
        Some(token.as_bytes()),
    ));
    match c.recv() {
        Some(Packet::ConnAck(a)) => a.reason_code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn xmpp_login(p: &Petrel, token: &str) -> bool {
    let mut c = Raw::connect(p.addrs["c2s"][0]);
    c.try_auth("X-OAUTH2", format!("\0alice\0{token}").as_bytes())
        .contains("<success")
}

fn setup() -> Petrel {
    // Every refused token login below counts as a failure of 127.0.0.1:
    // room for them (the throttle has its own tests).
    let p = Petrel::start("login_failures_allowed = 100");
    p.ctl_ok(&["register", "alice", "localhost", "wonderland"]);
    p.ctl_ok(&["oauth_add_client_public", "mobile", "Flow Test App", CB]);
    p.ctl_ok(&[
        "oauth_add_client_confidential",
        "backend",
        "Flow Test App",
        "backend-secret",
        CB,
    ]);
    p
}

#[test]
fn code_with_pkce_refresh_rotation_and_replays_through_authlib() {
    let p = setup();
    for (client_id, secret) in [("mobile", "-"), ("backend", "backend-secret")] {
        let r = run(
            AUTHLIB_CODE_FLOW,
            &[
                &p.http(),
                client_id,
                secret,
                CB,
                "alice@localhost",
                "wonderland",
                "sasl_auth",
                "1",
            ],
        );
        assert_eq!(r["page_status"], 200, "{r}");
        assert_eq!(r["deny"], serde_json::json!([302, true]), "{r}");
        assert_eq!(r["page_names_client"], true, "{r}");
        assert_eq!(r["page_shows_scope"], true, "{r}");
        assert_eq!(r["wrong_password_status"], 403, "{r}");
        assert_eq!(r["redirect_status"], 302, "{r}");
        assert_eq!(r["location_has_iss"], true, "{r}");
        assert_eq!(r["state_kept"], true, "{r}");
        assert_eq!(r["first"]["token_type"], "bearer", "{r}");
        assert_eq!(r["first"]["expires_in"], 3600, "{r}");
        assert_eq!(r["first"]["scope"], "sasl_auth", "{r}");
        assert_eq!(
            r["code_replay"],
            serde_json::json!([400, "invalid_grant"]),
            "{r}"
        );
        // The code's replay revoked what it gave.
        let first = r["first"]["access_token"].as_str().unwrap();
        assert_eq!(mqtt_login(&p, first), 0x87, "revoked by the code replay");
        assert!(!xmpp_login(&p, first));
    }

    // A fresh authorization, then refresh, replay and the family's end.
    let r = run(
        AUTHLIB_CODE_FLOW,
        &[
            &p.http(),
            "mobile",
            "-",
            CB,
            "alice@localhost",
            "wonderland",
            "sasl_auth",
            "0",
        ],
    );
    let access = r["first"]["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let refresh = r["first"]["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(mqtt_login(&p, &access), 0);
    assert!(xmpp_login(&p, &access));
    let r = run(
        AUTHLIB_INTROSPECT,
        &[
            &p.http(),
            "backend",
            "backend-secret",
            &access,
            &refresh,
            "bogus",
        ],
    );
    let (a, rf, bogus) = (&r[0], &r[1], &r[2]);
    assert_eq!(a[0], 200, "{r}");
    assert_eq!(a[1]["active"], true, "{r}");
    assert_eq!(a[1]["sub"], "alice@localhost", "{r}");
    assert_eq!(a[1]["username"], "alice", "{r}");
    assert_eq!(a[1]["client_id"], "mobile", "{r}");
    assert_eq!(a[1]["scope"], "sasl_auth", "{r}");
    assert_eq!(a[1]["token_type"], "bearer", "{r}");
    assert!(a[1]["exp"].as_u64().unwrap() > a[1]["iat"].as_u64().unwrap());
    assert_eq!(rf[1]["token_type"], "refresh_token", "{r}");
    assert_eq!(bogus[1], serde_json::json!({"active": false}), "{r}");
    // Introspection is for clients with a secret.
    let (s, _, v) = post_form(
        &format!("{}/oauth/introspect", p.http()),
        &[("token", access.as_str()), ("client_id", "mobile")],
    );
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    let (s, _, v) = post_form(
        &format!("{}/oauth/introspect", p.http()),
        &[
            ("token", access.as_str()),
            ("client_id", "backend"),
            ("client_secret", "wrong"),
        ],
    );
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));

    // A refresh token is not a login token.
    assert_ne!(mqtt_login(&p, &refresh), 0);
    assert!(!xmpp_login(&p, &refresh));
    // Another client may not use it.
    let (s, _, v) = post_form(
        &format!("{}/oauth/token", p.http()),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "backend"),
            ("client_secret", "backend-secret"),
        ],
    );
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));

    let r = run(AUTHLIB_REFRESH, &[&p.http(), "mobile", "-", &refresh]);
    let second = r["second"]["access_token"].as_str().unwrap();
    assert_ne!(second, access);
    assert_ne!(r["second"]["refresh_token"].as_str().unwrap(), refresh);
    assert_eq!(r["second"]["scope"], "sasl_auth");
    assert_eq!(r["replay"], "invalid_grant", "{r}");
    assert_eq!(
        r["after_replay"], "invalid_grant",
        "the replay revoked the whole family: {r}"
    );
    assert_ne!(mqtt_login(&p, &access), 0);
    assert_ne!(mqtt_login(&p, second), 0);
    assert!(!xmpp_login(&p, second));
    let r = run(
        AUTHLIB_INTROSPECT,
        &[&p.http(), "backend", "backend-secret", &access, second],
    );
    assert_eq!(r[0][1]["active"], false, "{r}");
    assert_eq!(r[1][1]["active"], false, "{r}");
}

#[test]
fn authorization_request_errors() {
    let p = setup();
    let get = |q: &str| {
        client()
            .get(format!("{}/oauth/authorize?{q}", p.http()))
            .send()
            .unwrap()
    };
    let cb = form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>();
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    // Before the redirect URI is trusted: a page, no redirect.
    for q in [
        format!("response_type=code&client_id=nobody&redirect_uri={cb}"),
        "response_type=code&client_id=mobile&redirect_uri=https%3A%2F%2Fevil.example%2Fcb"
            .to_string(),
    ] {
        let r = get(&q);
        assert_eq!(r.status().as_u16(), 400, "{q}");
        assert!(r.headers().get("location").is_none(), "{q}");
    }
    // After: a redirect with the error, the state and the issuer.
    for (q, want) in [
        (
            format!("response_type=code&client_id=mobile&redirect_uri={cb}&state=s"),
            "invalid_request", // a public client without PKCE
        ),
        (
            format!("response_type=code&client_id=mobile&redirect_uri={cb}&state=s&code_challenge={challenge}&code_challenge_method=plain"),
            "invalid_request",
        ),
        (
            format!("response_type=code&client_id=mobile&redirect_uri={cb}&state=s&code_challenge=short&code_challenge_method=S256"),
            "invalid_request",
        ),
        (
            format!("response_type=code&client_id=mobile&redirect_uri={cb}&state=s&code_challenge={challenge}&code_challenge_method=S256&scope=root"),
            "invalid_scope",
        ),
        (
            format!("response_type=token&client_id=mobile&redirect_uri={cb}&state=s"),
            "unauthorized_client",
        ),
    ] {
        let r = get(&q);
        assert_eq!(r.status().as_u16(), 302, "{q}");
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert!(loc.contains(&format!("error={want}")), "{q}: {loc}");
        assert!(loc.contains("state=s"), "{loc}");
        assert!(loc.contains("iss=") || !loc.contains('?'), "{loc}");
    }
    // The confidential client may skip PKCE; the page then shows.
    let r = get(&format!(
        "response_type=code&client_id=backend&redirect_uri={cb}"
    ));
    assert_eq!(r.status().as_u16(), 200);
}

/// MQTT.js keeps its session across a token renewal: refresh grant, AUTH
/// 0x19 with the new access token, the old one revoked, messages still
/// flowing on the same connection.
#[test]
fn mqttjs_reauthenticates_with_a_refreshed_token() {
    if !common::have_program("node") {
        return;
    }
    let p = setup();
    let r = run(
        AUTHLIB_CODE_FLOW,
        &[
            &p.http(),
            "mobile",
            "-",
            CB,
            "alice@localhost",
            "wonderland",
            "sasl_auth",
            "0",
        ],
    );
    let access = r["first"]["access_token"].as_str().unwrap();
    let refresh = r["first"]["refresh_token"].as_str().unwrap();
    let port = p.mqtt().port().to_string();
    let (ok, out, err) = common::node::run_js(
        "mqtt_reauth_flow.js",
        &[&port, &p.http(), "mobile", access, refresh],
    );
    assert!(ok, "{out} {err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["connack"], 0, "{r}");
    assert_eq!(r["refreshed"], true, "{r}");
    assert_eq!(r["reauth"], 0, "AUTH 0x00 after AUTH 0x19: {r}");
    assert_eq!(r["revoked"], 200, "{r}");
    assert_eq!(r["got"], serde_json::json!(["before", "after"]), "{r}");
    assert_eq!(r["error"], serde_json::Value::Null, "{r}");
}
