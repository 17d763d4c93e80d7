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

/// The client credentials grant through authlib (the confidential client,
/// a public one refused, a wrong secret refused); the service's token then
/// logs in over MQTT 3.1.1 with paho-mqtt (token as password) and
/// publishes a command that alice's device, logged in with her own token,
/// receives.
const AUTHLIB_CLIENT_CREDENTIALS: &str = r#"
import sys, json, time
import requests
import paho.mqtt.client as mqtt
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client.errors import OAuthError
base, port, alice_token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {}
s = OAuth2Session("backend", "backend-secret", scope="mqtt mqtt:publish:devices/#")
tok = s.fetch_token(base + "/oauth/token", grant_type="client_credentials")
out["token"] = {k: tok.get(k) for k in ("access_token", "refresh_token", "expires_in", "scope", "token_type")}
r = requests.post(base + "/oauth/token", data={"grant_type": "client_credentials"}, auth=("backend", "wrong"))
out["wrong_secret"] = [r.status_code, r.json().get("error"), r.headers.get("WWW-Authenticate", "")[:5]]
r = requests.post(base + "/oauth/token", data={"grant_type": "client_credentials", "client_id": "mobile"})
out["public_client"] = [r.status_code, r.json().get("error")]
r = requests.post(base + "/oauth/token", data={"grant_type": "client_credentials", "scope": "admin"}, auth=("backend", "backend-secret"))
out["bad_scope"] = [r.status_code, r.json().get("error")]
r = requests.post(base + "/oauth/token", data={"grant_type": "client_credentials", "scope": "sasl_auth"}, auth=("backend", "backend-secret"))
out["xmpp_scope"] = [r.status_code, r.json().get("error")]
r = requests.post(base + "/oauth/token", data={"grant_type": "client_credentials"}, auth=("backend", "backend-secret"))
out["default"] = [r.status_code, r.json().get("scope"), r.json().get("expires_in")]
got, acks = [], {}
def client(cid, user, password):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    def on_connect(c, u, f, rc, props): acks[cid] = rc.value
    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.time() + 10
    while cid not in acks and time.time() < deadline: time.sleep(0.02)
    return c
device = client("device-42", "alice", alice_token)
device.on_message = lambda c, u, m: got.append([m.topic, m.payload.decode(), m.qos])
subscribed = []
device.on_subscribe = lambda c, u, mid, codes, props: subscribed.append([x.value for x in codes])
device.subscribe("devices/42/#", qos=1)
deadline = time.time() + 10
while not subscribed and time.time() < deadline: time.sleep(0.02)
service = client("backend-1", "backend", tok["access_token"])
out["connack"] = acks.get("backend-1")
if out["connack"] == 0:
    service.publish("devices/42/cmd", "reboot", qos=1).wait_for_publish(5)
    while not got and time.time() < deadline: time.sleep(0.02)
out["got"] = got
for c in (device, service):
    c.disconnect(); c.loop_stop()
print(json.dumps(out))
"#;

fn run(script: &str, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = run_script(script, args, Duration::from_secs(60));
    assert!(ok, "authlib script failed: {err}\n{out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("bad output {out} / {err}"))
}

/// alice through [`AUTHLIB_CODE_FLOW`] for `client_id` (`secret` "-" for
/// none); `replay`: present the code a second time at the end.
fn code_flow(p: &Petrel, client_id: &str, secret: &str, replay: bool) -> serde_json::Value {
    run(
        AUTHLIB_CODE_FLOW,
        &[
            &p.http(),
            client_id,
            secret,
            CB,
            "alice@localhost",
            "wonderland",
            "sasl_auth",
            if replay { "1" } else { "0" },
        ],
    )
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
        let r = code_flow(&p, client_id, secret, true);
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
    let r = code_flow(&p, "mobile", "-", false);
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
    assert_eq!(
        rf[1],
        serde_json::json!({"active": false}),
        "another client's refresh token is not active to a resource server: {r}"
    );
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
    let r = code_flow(&p, "mobile", "-", false);
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

/// RFC 8628 by hand (Python `requests`): the device asks, polls, the user
/// answers on the verification page (read and posted as a browser would),
/// the device gets its tokens; and the other answers on the way.
const DEVICE_FLOW: &str = r#"
import sys, json, re, html
import requests
base, client_id, user, password = sys.argv[1:5]
TOKEN, GRANT = base + "/oauth/token", "urn:ietf:params:oauth:grant-type:device_code"
out = {}
def start(scope="sasl_auth"):
    r = requests.post(base + "/oauth/device_authorization", data={"client_id": client_id, "scope": scope})
    return r.status_code, r.json()
def poll(dc):
    r = requests.post(TOKEN, data={"grant_type": GRANT, "device_code": dc, "client_id": client_id})
    return r.status_code, r.json()
def answer(d, decision, pw):
    b = requests.Session()
    page = b.get(d["verification_uri_complete"])
    fields = {html.unescape(n): html.unescape(v) for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text)}
    r = b.post(d["verification_uri"], data=dict(fields, username=user, password=pw, decision=decision))
    return page, r
s, d = start()
out["start"] = [s, sorted(d.keys()), d["user_code"], d["interval"], d["expires_in"], d["verification_uri"]]
out["first_poll"] = poll(d["device_code"])
out["too_soon"] = poll(d["device_code"])
s2, d2 = start()
page, r = answer(d2, "allow", "wrong")
out["page_shows"] = ["Device Test App" in page.text, "sasl_auth" in page.text, d2["user_code"] in page.text]
out["wrong_password"] = r.status_code
page, r = answer(d2, "allow", password)
out["allowed_page"] = [r.status_code, "connected" in r.text]
# Never polled before: the first poll after the answer is not too soon.
s, t = poll(d2["device_code"])
out["token"] = [s, t.get("access_token"), t.get("refresh_token"), t.get("token_type")]
out["reused"] = poll(d2["device_code"])
s3, d3 = start()
answer(d3, "deny", "")
out["denied"] = poll(d3["device_code"])
b = requests.Session()
r = b.get(base + "/oauth/device", params={"user_code": "BCDF-GHJK"})
out["unknown_code"] = [r.status_code, "unknown" in r.text]
print(json.dumps(out))
"#;

#[test]
fn device_grant_by_hand() {
    let p = Petrel::start("login_failures_allowed = 100\noauth_device_interval = 1");
    p.ctl_ok(&["register", "alice", "localhost", "wonderland"]);
    p.ctl_ok(&["oauth_add_client_public", "tv", "Device Test App", CB]);
    p.ctl_ok(&["oauth_add_client_confidential", "backend", "B", "s", CB]);
    let r = run(
        DEVICE_FLOW,
        &[&p.http(), "tv", "alice@localhost", "wonderland"],
    );
    let start = &r["start"];
    assert_eq!(start[0], 200, "{r}");
    assert_eq!(
        start[1],
        serde_json::json!([
            "device_code",
            "expires_in",
            "interval",
            "user_code",
            "verification_uri",
            "verification_uri_complete"
        ])
    );
    let user_code = start[2].as_str().unwrap();
    assert_eq!(user_code.len(), 9, "{user_code}");
    assert_eq!(&user_code[4..5], "-");
    assert!(user_code
        .chars()
        .filter(|c| *c != '-')
        .all(|c| "BCDFGHJKLMNPQRSTVWXZ".contains(c)));
    assert_eq!((start[3].as_u64(), start[4].as_u64()), (Some(1), Some(600)));
    // The issuer's URL (this listener's first host: localhost).
    let port = p.http().rsplit(':').next().unwrap().to_string();
    assert_eq!(start[5], format!("http://localhost:{port}/oauth/device"));
    let err = |v: &serde_json::Value| {
        (
            v[0].as_u64().unwrap(),
            v[1]["error"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        err(&r["first_poll"]),
        (400, "authorization_pending".into()),
        "{r}"
    );
    assert_eq!(err(&r["too_soon"]), (400, "slow_down".into()), "{r}");
    assert_eq!(
        r["page_shows"],
        serde_json::json!([true, true, true]),
        "{r}"
    );
    assert_eq!(r["wrong_password"], 403, "{r}");
    assert_eq!(r["allowed_page"], serde_json::json!([200, true]), "{r}");
    assert_eq!(r["token"][0], 200, "{r}");
    assert_eq!(r["token"][3], "bearer", "{r}");
    assert!(
        r["token"][2].is_string(),
        "a public client gets a refresh token: {r}"
    );
    assert_eq!(err(&r["reused"]), (400, "invalid_grant".into()), "{r}");
    assert_eq!(err(&r["denied"]), (400, "access_denied".into()), "{r}");
    assert_eq!(r["unknown_code"], serde_json::json!([400, true]), "{r}");
    let token = r["token"][1].as_str().unwrap();
    assert_eq!(mqtt_login(&p, token), 0);
    assert!(xmpp_login(&p, token));

    // The grant's other errors.
    let url = format!("{}/oauth/device_authorization", p.http());
    let (s, _, v) = post_form(&url, &[("client_id", "backend"), ("client_secret", "s")]);
    assert_eq!((s, v["error"].as_str()), (400, Some("unauthorized_client")));
    let (s, _, v) = post_form(&url, &[("client_id", "nobody")]);
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    let (s, _, v) = post_form(&url, &[("client_id", "tv"), ("scope", "root")]);
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")));
    let (s, _, v) = post_form(
        &format!("{}/oauth/token", p.http()),
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "tv"),
        ],
    );
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
}

/// A device code nobody answers ends with `expired_token`.
#[test]
fn device_codes_expire() {
    let p = Petrel::start("oauth_device_code_expire = 1\noauth_device_interval = 1");
    p.ctl_ok(&["oauth_add_client_public", "tv", "Device Test App", CB]);
    let (s, _, d) = post_form(
        &format!("{}/oauth/device_authorization", p.http()),
        &[("client_id", "tv")],
    );
    assert_eq!(s, 200, "{d}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, _, v) = post_form(
            &format!("{}/oauth/token", p.http()),
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", d["device_code"].as_str().unwrap()),
                ("client_id", "tv"),
            ],
        );
        assert_eq!(s, 400);
        if v["error"] == "expired_token" {
            break;
        }
        assert!(
            ["authorization_pending", "slow_down"].contains(&v["error"].as_str().unwrap()),
            "{v}"
        );
        assert!(std::time::Instant::now() < deadline, "never expired");
        // Polling faster than the interval only earns slow_down answers;
        // the expiry is checked first.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `oauth_legacy_grants = false` (RFC 9700): no password grant, no
/// implicit grant, and the metadata says so.
#[test]
fn legacy_grants_can_be_turned_off() {
    let p = Petrel::start("oauth_legacy_grants = false");
    p.ctl_ok(&["register", "alice", "localhost", "wonderland"]);
    p.ctl_ok(&["oauth_add_client_password", "app", "App", "app-secret"]);
    p.ctl_ok(&["oauth_add_client_implicit", "web", "Web", CB]);
    let (s, v) = common::password_grant(&p.http(), "alice@localhost", "wonderland", &[]);
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let cb = form_urlencoded::byte_serialize(CB.as_bytes()).collect::<String>();
    let r = client()
        .get(format!(
            "{}/oauth/authorize?response_type=token&client_id=web&redirect_uri={cb}&state=s",
            p.http()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(loc.contains("error=unsupported_response_type"), "{loc}");
    let m: serde_json::Value = client()
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            p.http()
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        m["grant_types_supported"],
        serde_json::json!([
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "client_credentials"
        ])
    );
    assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
    // Every endpoint the metadata names answers (not 404).
    for ep in [
        "token_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "device_authorization_endpoint",
    ] {
        let url = m[ep].as_str().unwrap().replace("localhost", "127.0.0.1");
        let r = client().post(url).form(&[("x", "y")]).send().unwrap();
        assert_ne!(r.status().as_u16(), 404, "{ep}");
    }
}

/// Client credentials: the token's principal is the client itself
/// (`backend@localhost`); it logs in over MQTT and publishes what its
/// scopes allow; it has no XMPP account; no account may take its name.
#[test]
fn client_credentials_for_a_service() {
    let p = setup();
    let alice = p.token("alice@localhost", 600, "sasl_auth");
    let r = run(
        AUTHLIB_CLIENT_CREDENTIALS,
        &[&p.http(), &p.mqtt().port().to_string(), &alice],
    );
    let t = &r["token"];
    assert_eq!(t["token_type"], "bearer", "{r}");
    assert_eq!(t["scope"], "mqtt mqtt:publish:devices/#");
    assert!(
        t["refresh_token"].is_null(),
        "RFC 6749 §4.4.3: no refresh token"
    );
    assert_eq!(r["wrong_secret"][0], 401);
    assert_eq!(r["wrong_secret"][1], "invalid_client");
    assert_eq!(
        r["public_client"],
        serde_json::json!([400, "unauthorized_client"])
    );
    assert_eq!(r["bad_scope"], serde_json::json!([400, "invalid_scope"]));
    assert_eq!(r["xmpp_scope"], serde_json::json!([400, "invalid_scope"]));
    assert_eq!(
        r["default"],
        serde_json::json!([200, "mqtt", 3600]),
        "MQTT only, short-lived"
    );
    assert_eq!(r["connack"], 0, "{r}");
    assert_eq!(
        r["got"],
        serde_json::json!([["devices/42/cmd", "reboot", 1]])
    );
    let token = t["access_token"].as_str().unwrap();
    // MQTT 5 enhanced authentication too.
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    c.send(&connect_packet(
        "svc",
        Some("X-OAUTH2"),
        Some(token.as_bytes()),
    ));
    assert!(matches!(c.recv(), Some(Packet::ConnAck(a)) if a.reason_code == 0));
    // No XMPP: the principal is no account (its token cannot even ask).
    let mut x = Raw::connect(p.addrs["c2s"][0]);
    let reply = x.try_auth("X-OAUTH2", format!("\0backend\0{token}").as_bytes());
    assert!(reply.contains("<not-authorized/>"), "{reply}");
    // Its name is taken.
    let out = p.ctl(&["register", "backend", "localhost", "pw"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("principal of the OAuth client backend"),
        "{out:?}"
    );
    let listed = p.ctl_ok(&["oauth_list_tokens"]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(" backend@localhost mqtt;mqtt:publish:devices/# ")),
        "{listed}"
    );
    // Removing the client ends its token.
    p.ctl_ok(&["oauth_remove_client", "backend"]);
    assert_eq!(mqtt_login(&p, token), 0x87);
}

/// A refresh may narrow the access token's rights, never widen them (a
/// topic limit dropped is a widening); the refresh chain keeps what was
/// granted; a refresh token is active in introspection only to its client.
#[test]
fn refresh_narrows_by_rights_and_keeps_the_grant() {
    let p = setup();
    p.ctl_ok(&["oauth_add_client_password", "app", "App", "app-secret"]);
    let (s, v) = common::password_grant(
        &p.http(),
        "alice@localhost",
        "wonderland",
        &[("scope", "sasl_auth mqtt:publish:dev/#")],
    );
    assert_eq!(s, 200, "{v}");
    let url = format!("{}/oauth/token", p.http());
    let refresh = |token: &str, scope: &str| {
        post_form(
            &url,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("scope", scope),
                ("client_id", "app"),
                ("client_secret", "app-secret"),
            ],
        )
    };
    let r1 = v["refresh_token"].as_str().unwrap();
    let (s, _, w) = refresh(r1, "sasl_auth");
    assert_eq!(
        (s, w["error"].as_str()),
        (400, Some("invalid_scope")),
        "{w}"
    );
    let (s, _, w) = refresh(r1, "sasl_auth mqtt:publish:dev/42");
    assert_eq!(s, 200, "the refused widening did not spend it: {w}");
    assert_eq!(w["scope"], "sasl_auth mqtt:publish:dev/42");
    let r2 = w["refresh_token"].as_str().unwrap();
    let ask = |client: &str, secret: &str, token: &str| {
        post_form(
            &format!("{}/oauth/introspect", p.http()),
            &[
                ("token", token),
                ("client_id", client),
                ("client_secret", secret),
            ],
        )
        .2
    };
    let mine = ask("app", "app-secret", r2);
    assert_eq!(mine["active"], true, "{mine}");
    assert_eq!(mine["scope"], "sasl_auth mqtt:publish:dev/#", "{mine}");
    assert_eq!(mine["token_type"], "refresh_token");
    assert_eq!(
        ask("backend", "backend-secret", r2),
        serde_json::json!({"active": false})
    );
    // The chain can still give the whole grant back.
    let (s, _, w) = refresh(r2, "sasl_auth mqtt:publish:dev/#");
    assert_eq!(s, 200, "{w}");
}

/// Refresh tokens are listed (marked `refresh`) and revoked like tokens:
/// by id with ctl, or by the client at `/oauth/revoke` with
/// `token_type_hint=refresh_token`; either takes the access tokens of its
/// authorization with it.
#[test]
fn refresh_tokens_are_listed_and_revoked_with_their_family() {
    let p = setup();
    let r = code_flow(&p, "mobile", "-", false);
    let access = r["first"]["access_token"].as_str().unwrap().to_string();
    let list = p.ctl_ok(&["oauth_list_tokens"]);
    let refresh_id = list
        .lines()
        .find(|l| l.ends_with(" refresh"))
        .unwrap_or_else(|| panic!("{list}"))
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(mqtt_login(&p, &access), 0);
    p.ctl_ok(&["oauth_revoke_token", &refresh_id]);
    assert_eq!(mqtt_login(&p, &access), 0x87, "the family went with it");
    assert_eq!(p.ctl_ok(&["oauth_list_tokens"]).trim(), "");

    let r = code_flow(&p, "mobile", "-", false);
    let access = r["first"]["access_token"].as_str().unwrap();
    let refresh = r["first"]["refresh_token"].as_str().unwrap();
    let (s, _, _) = post_form(
        &format!("{}/oauth/revoke", p.http()),
        &[
            ("token", refresh),
            ("token_type_hint", "refresh_token"),
            ("client_id", "mobile"),
        ],
    );
    assert_eq!(s, 200);
    assert!(!xmpp_login(&p, access));
    assert_eq!(p.ctl_ok(&["oauth_list_tokens"]).trim(), "");
}
