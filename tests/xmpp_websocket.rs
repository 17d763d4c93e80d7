//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` and XEP-0156
//! discovery: xmpp.js finds the endpoint through `host-meta.json`, logs
//! in and chats with a TCP client; headless Chromium runs a minimal page
//! (`tests/web/xmpp-websocket.html`) that logs in and sends a message with
//! the browser's own WebSocket; a request without the `xmpp` subprotocol
//! is refused.

mod common;

use std::time::Duration;

use common::python::run_script;
use common::xmpp::Raw;
use common::Petrel;

fn server() -> Petrel {
    let p = Petrel::start("").with_user_and_client();
    p.ctl_ok(&["register", "bob", "localhost", "builder"]);
    p
}

#[test]
fn host_meta_names_the_websocket_endpoint() {
    let p = server();
    let c = common::client();
    let http = p.http();
    let port = http.rsplit(':').next().unwrap().to_string();
    let r = c
        .get(format!("{http}/.well-known/host-meta"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/xrd+xml"));
    let xrd = r.text().unwrap();
    assert!(
        xrd.contains("rel='urn:xmpp:alt-connections:websocket'")
            && xrd.contains(&format!("href='ws://127.0.0.1:{port}/xmpp-websocket'")),
        "{xrd}"
    );
    let j: serde_json::Value = c
        .get(format!("{}/.well-known/host-meta.json", p.https()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let href = j["links"][0]["href"].as_str().unwrap();
    assert!(
        href.starts_with("wss://") && href.ends_with("/xmpp-websocket"),
        "{j}"
    );
    // Other well-known paths are what they were.
    assert_eq!(
        c.get(format!("{http}/.well-known/other"))
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.get(format!("{http}/.well-known/oauth-authorization-server"))
            .send()
            .unwrap()
            .status(),
        200
    );
}

/// Without the `xmpp` subprotocol: 400, no upgrade.
#[test]
fn an_upgrade_without_the_xmpp_subprotocol_is_refused() {
    let p = server();
    let r = common::client()
        .get(format!("{}/xmpp-websocket", p.http()))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[test]
fn xmpp_js_over_websocket_chats_with_a_tcp_client() {
    xmpp_js_chats(false);
}

#[test]
fn xmpp_js_over_secure_websocket_chats_with_a_tcp_client() {
    xmpp_js_chats(true);
}

fn xmpp_js_chats(tls: bool) {
    if !common::have_program("node") {
        return;
    }
    let p = server();
    let mut bob = Raw::login(p.addrs["c2s"][0], "bob", "builder", "desk");
    bob.available();
    let base = if tls { p.https() } else { p.http() };
    let js = std::thread::spawn(move || {
        common::node::run_js(
            "xmpp_websocket.mjs",
            &[&base, "alice", "wonderland", "bob@localhost"],
        )
    });
    let got =
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bob.expect("</message>"))) {
            Ok(g) => g,
            Err(_) => {
                let (ok, out, err) = js.join().unwrap();
                panic!("bob got nothing from xmpp.js (exit ok: {ok}): {out} {err}");
            }
        };
    assert!(got.contains("<body>hello over websocket</body>"), "{got}");
    // xmpp.js logs in by SASL2 and Bind 2: the resource is its tag and a
    // stable hash.
    let from = got
        .split("from='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap()
        .to_string();
    assert!(from.starts_with("alice@localhost/web."), "{got}");
    bob.send(&format!(
        "<message to='{from}' type='chat'><body>hello back</body></message>"
    ));
    let (ok, out, err) = js.join().unwrap();
    assert!(ok, "{out} {err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        r["service"]
            .as_str()
            .unwrap()
            .starts_with(if tls { "wss://" } else { "ws://" }),
        "{r}"
    );
    assert_eq!(r["jid"], from.as_str(), "{r}");
    assert_eq!(r["got"], "hello back", "{r}");
}

/// The page is served by a small HTTP server in the script (another
/// origin than Petrel's, as a web app's would be).
const BROWSER: &str = r#"
import sys, json, threading, http.server, functools, os, urllib.parse
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
web, ws, user, password, to, shot = sys.argv[1:7]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=web)
handler.log_message = lambda *a: None
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
o = webdriver.ChromeOptions()
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
    o.add_argument(a)
o.binary_location = os.environ.get("PETREL_CHROMIUM", "/usr/bin/chromium")
d = webdriver.Chrome(service=Service(os.environ.get("PETREL_CHROMEDRIVER", "/usr/bin/chromedriver")), options=o)
out = {}
try:
    qs = urllib.parse.urlencode({"ws": ws, "user": user, "pass": password, "to": to})
    d.get("http://127.0.0.1:%d/xmpp-websocket.html?%s" % (srv.server_address[1], qs))
    WebDriverWait(d, 20).until(lambda d: d.find_element(By.ID, "state").text not in ("starting", ""))
    WebDriverWait(d, 20).until(lambda d: d.find_element(By.ID, "state").text == "sent" or d.find_element(By.ID, "state").text.startswith("error"))
    out["state"] = d.find_element(By.ID, "state").text
    out["log"] = d.find_element(By.ID, "log").text
    d.save_screenshot(shot)
finally:
    d.quit()
    srv.shutdown()
print(json.dumps(out))
"#;

#[test]
fn a_browser_page_logs_in_and_sends_over_websocket() {
    let ok = common::have_program("chromium") && common::have_program("chromedriver");
    if !ok {
        assert!(
            std::env::var_os("PETREL_REQUIRE_PEERS").is_none(),
            "chromium and chromium-driver are required (PETREL_REQUIRE_PEERS)"
        );
        eprintln!("SKIPPED: chromium or chromedriver not installed");
        return;
    }
    let p = server();
    let mut bob = Raw::login(p.addrs["c2s"][0], "bob", "builder", "desk");
    bob.available();
    let web = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web");
    let ws = format!("{}/xmpp-websocket", p.http().replacen("http", "ws", 1));
    let shots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-artifacts");
    std::fs::create_dir_all(shots).unwrap();
    let shot = format!("{shots}/xmpp-websocket.png");
    let (ok, out, err) = run_script(
        BROWSER,
        &[web, &ws, "alice", "wonderland", "bob@localhost", &shot],
        Duration::from_secs(90),
    );
    assert!(ok, "{out}\n{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["state"], "sent", "{r}");
    let got = bob.expect("</message>");
    assert!(got.contains("<body>hello from the browser</body>"), "{got}");
    assert!(got.contains("from='alice@localhost/browser'"), "{got}");
}
