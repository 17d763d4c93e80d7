//! The sign-in pages in a real browser: headless Chromium driven through
//! WebDriver (Python `selenium`, chromium-driver), each flow end to end —
//! the page shown, the form filled and posted without JavaScript, the
//! redirect followed to the app — with a screenshot of each page saved
//! under `target/test-artifacts/`.
//!
//! Skipped (with a line saying so) where Chromium is not installed, unless
//! `PETREL_REQUIRE_PEERS` is set, as CI does.

mod common;

use std::time::Duration;

use common::mqtt_raw::{connect_packet, RawClient};
use common::python::run_script;
use common::Petrel;
use petrel::mqtt::codec::{Packet, Version};

/// Drives one authorization in Chromium. The app's redirect URI is served
/// by a small HTTP server in the script, so the browser lands on a real
/// page. argv: the page's URL, the redirect port (0: none), username,
/// password, decision (allow / deny), screenshot prefix.
const BROWSER_FLOW: &str = r#"
import sys, json, threading, http.server, os
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from selenium.webdriver.support import expected_conditions as EC
url, cb_port, user, password, decision, shots = sys.argv[1:7]
class Cb(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("content-type", "text/html"); self.end_headers()
        self.wfile.write(b"<html><body><h1>app callback</h1></body></html>")
    def log_message(self, *a): pass
srv = None
if cb_port != "0":
    srv = http.server.HTTPServer(("127.0.0.1", int(cb_port)), Cb)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
o = webdriver.ChromeOptions()
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=800,900"):
    o.add_argument(a)
o.binary_location = os.environ.get("PETREL_CHROMIUM", "/usr/bin/chromium")
d = webdriver.Chrome(service=Service(os.environ.get("PETREL_CHROMEDRIVER", "/usr/bin/chromedriver")), options=o)
out = {}
try:
    d.set_page_load_timeout(20)
    d.get(url)
    out["title"] = d.title
    out["text"] = d.find_element(By.TAG_NAME, "body").text
    d.save_screenshot(shots + "-page.png")
    old = d.find_element(By.TAG_NAME, "html")
    if decision == "deny":
        d.find_element(By.CSS_SELECTOR, "button[value=deny]").click()
    else:
        d.find_element(By.ID, "username").send_keys(user)
        d.find_element(By.ID, "password").send_keys(password)
        d.find_element(By.CSS_SELECTOR, "button[value=allow]").click()
    # The next page (the app's, or the form again) has replaced this one.
    WebDriverWait(d, 20).until(EC.staleness_of(old))
    WebDriverWait(d, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")
    out["url"] = d.current_url
    out["after_text"] = d.find_element(By.TAG_NAME, "body").text
    d.save_screenshot(shots + "-after.png")
finally:
    d.quit()
    if srv:
        srv.shutdown()
print(json.dumps(out))
"#;

/// Exchanges a code for tokens with authlib, as the app behind the
/// redirect URI would.
const EXCHANGE: &str = r#"
import sys, json
from authlib.integrations.requests_client import OAuth2Session
base, client_id, cb, url, verifier = sys.argv[1:6]
s = OAuth2Session(client_id, None, redirect_uri=cb, token_endpoint_auth_method="none")
t = s.fetch_token(base + "/oauth/token", authorization_response=url, code_verifier=verifier)
print(json.dumps({k: t.get(k) for k in ("access_token", "refresh_token", "expires_in")}))
"#;

fn chromium_available() -> bool {
    let ok = common::have_program("chromium") && common::have_program("chromedriver");
    if !ok {
        assert!(
            std::env::var_os("PETREL_REQUIRE_PEERS").is_none(),
            "chromium and chromium-driver are required (PETREL_REQUIRE_PEERS)"
        );
        eprintln!("SKIPPED: chromium or chromedriver not installed");
    }
    ok
}

fn artifacts(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).display().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn browse(args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = run_script(BROWSER_FLOW, args, Duration::from_secs(120));
    assert!(ok, "browser script failed: {err}\n{out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("bad output {out} / {err}"))
}

fn query_param(url: &str, key: &str) -> Option<String> {
    let (_, rest) = url.split_once(['?', '#'])?;
    form_urlencoded::parse(rest.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A server with alice and one client registered by `command` (a ctl
/// command taking a redirect URI last), whose redirect URI is on a free
/// local port: (server, that port, the redirect URI).
fn server_with_client(command: &str, id: &str, name: &str) -> (Petrel, u16, String) {
    let p = Petrel::start("");
    p.ctl_ok(&["register", "alice", "localhost", "wonderland"]);
    let port = free_port();
    let cb = format!("http://127.0.0.1:{port}/cb");
    p.ctl_ok(&[command, id, name, &cb]);
    (p, port, cb)
}

#[test]
fn code_flow_in_chromium() {
    if !chromium_available() {
        return;
    }
    let (p, port, cb) = server_with_client("oauth_add_client_public", "phone", "Browser Test App");
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let extra = format!(
        "&response_type=code&redirect_uri={}&scope=sasl_auth&state=st1&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
        form_urlencoded::byte_serialize(cb.as_bytes()).collect::<String>()
    );
    let r = browse(&[
        &format!("{}/oauth/authorize?client_id=phone{extra}", p.http()),
        &port.to_string(),
        "alice@localhost",
        "wonderland",
        "allow",
        &artifacts("oauth-code"),
    ]);
    assert_eq!(r["title"], "Sign in", "{r}");
    let text = r["text"].as_str().unwrap();
    assert!(text.contains("Browser Test App"), "{text}");
    assert!(text.contains("sasl_auth"), "{text}");
    let url = r["url"].as_str().unwrap();
    assert!(url.starts_with(&cb), "{r}");
    assert_eq!(r["after_text"], "app callback", "{r}");
    assert_eq!(query_param(url, "state").as_deref(), Some("st1"));
    assert!(query_param(url, "iss").is_some(), "{url}");
    let (ok, out, err) = run_script(
        EXCHANGE,
        &[&p.http(), "phone", &cb, url, verifier],
        Duration::from_secs(60),
    );
    assert!(ok, "{err}");
    let t: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let token = t["access_token"].as_str().unwrap();
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    c.send(&connect_packet(
        "browser",
        Some("X-OAUTH2"),
        Some(token.as_bytes()),
    ));
    assert!(matches!(c.recv(), Some(Packet::ConnAck(a)) if a.reason_code == 0));

    // Deny: back to the app with access_denied, no code.
    let r = browse(&[
        &format!("{}/oauth/authorize?client_id=phone{extra}", p.http()),
        &port.to_string(),
        "",
        "",
        "deny",
        &artifacts("oauth-code-deny"),
    ]);
    let url = r["url"].as_str().unwrap();
    assert_eq!(
        query_param(url, "error").as_deref(),
        Some("access_denied"),
        "{r}"
    );
    assert_eq!(query_param(url, "code"), None);
}

#[test]
fn implicit_flow_in_chromium() {
    if !chromium_available() {
        return;
    }
    let (p, port, cb) = server_with_client("oauth_add_client_implicit", "web", "Implicit Test App");
    let extra = format!(
        "&response_type=token&redirect_uri={}&state=st2",
        form_urlencoded::byte_serialize(cb.as_bytes()).collect::<String>()
    );
    // A wrong password first: the form again, with the error.
    let r = browse(&[
        &format!("{}/oauth/authorize?client_id=web{extra}", p.http()),
        &port.to_string(),
        "alice@localhost",
        "wrong",
        "allow",
        &artifacts("oauth-implicit-wrong"),
    ]);
    assert!(
        r["after_text"]
            .as_str()
            .unwrap()
            .contains("Wrong account or password"),
        "{r}"
    );
    let r = browse(&[
        &format!("{}/oauth/authorize?client_id=web{extra}", p.http()),
        &port.to_string(),
        "alice@localhost",
        "wonderland",
        "allow",
        &artifacts("oauth-implicit"),
    ]);
    let url = r["url"].as_str().unwrap();
    assert!(url.starts_with(&cb), "{r}");
    assert_eq!(query_param(url, "state").as_deref(), Some("st2"));
    assert!(query_param(url, "iss").is_some(), "RFC 9207 iss: {url}");
    let token = query_param(url, "access_token").expect("token in the fragment");
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    c.send(&connect_packet(
        "browser",
        Some("X-OAUTH2"),
        Some(token.as_bytes()),
    ));
    assert!(matches!(c.recv(), Some(Packet::ConnAck(a)) if a.reason_code == 0));
}

#[test]
fn device_verification_in_chromium() {
    if !chromium_available() {
        return;
    }
    let p = Petrel::start("oauth_device_interval = 1");
    p.ctl_ok(&["register", "alice", "localhost", "wonderland"]);
    p.ctl_ok(&[
        "oauth_add_client_public",
        "tv",
        "Living Room TV",
        "http://127.0.0.1:9/cb",
    ]);
    let (s, _, d) = common::post_form(
        &format!("{}/oauth/device_authorization", p.http()),
        &[("client_id", "tv"), ("scope", "sasl_auth")],
    );
    assert_eq!(s, 200, "{d}");
    // The complete URI, as a phone would open it from a QR code.
    let url = d["verification_uri_complete"].as_str().unwrap();
    let r = browse(&[
        url,
        "0",
        "alice@localhost",
        "wonderland",
        "allow",
        &artifacts("oauth-device"),
    ]);
    let text = r["text"].as_str().unwrap();
    assert!(text.contains("Living Room TV"), "{text}");
    assert!(text.contains(d["user_code"].as_str().unwrap()), "{text}");
    assert!(text.contains("sasl_auth"), "{text}");
    assert!(
        r["after_text"]
            .as_str()
            .unwrap()
            .contains("connected to alice@localhost"),
        "{r}"
    );
    let (s, _, t) = common::post_form(
        &format!("{}/oauth/token", p.http()),
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", d["device_code"].as_str().unwrap()),
            ("client_id", "tv"),
        ],
    );
    assert_eq!(s, 200, "{t}");
    let token = t["access_token"].as_str().unwrap();
    let mut c = RawClient::connect(p.mqtt(), Version::V5);
    c.send(&connect_packet(
        "tv",
        Some("X-OAUTH2"),
        Some(token.as_bytes()),
    ));
    assert!(matches!(c.recv(), Some(Packet::ConnAck(a)) if a.reason_code == 0));
}
